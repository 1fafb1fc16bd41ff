"""Use cases shared by the API routers, the web pages and the CLI; they speak ORM and schemas."""
