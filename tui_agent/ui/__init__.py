"""The Textual app: a client of the service layer only."""
