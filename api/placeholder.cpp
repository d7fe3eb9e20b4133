// The HTTP API (server, routes, client) lands here.
