"""Owlet hdl package."""
