"""Users, sessions, sign-up, verification and password reset."""
