"""Passwords, tokens and login throttling."""
