"""The web console at /ui/ and the offline API docs at /docs, both served by the API itself."""
