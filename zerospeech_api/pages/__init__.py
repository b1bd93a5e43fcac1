"""Server-rendered HTML pages under /page/: public leaderboards and the participant's page."""
