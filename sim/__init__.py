"""Owlet sim package."""
