"""The custom search attributes renders carry in Temporal visibility (registered by the
embedded stack's dev server at start, and by the HTTP API on any other server)."""

OWNER = "LongtalkOwner"  # Keyword: the name of the API key that submitted the render
RETRIES = "LongtalkRetries"  # Int: how often the render was retried through the API

SEARCH_ATTRIBUTES = {OWNER: "Keyword", RETRIES: "Int"}
