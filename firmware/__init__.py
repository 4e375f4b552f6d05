"""Owlet firmware package."""
