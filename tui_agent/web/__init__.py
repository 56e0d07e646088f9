"""The HTTP API (`tui-agent serve`): one more front end over the service layer."""
