"""Reply templates: CRUD, a Jinja2 sandbox, and the catalog of placeholders."""
