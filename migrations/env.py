"""Alembic environment: the URL comes from the caller's config (``app.migrate``) or, when run as
plain ``alembic``, from ADVISOR_DATABASE_URL via the settings."""

from alembic import context
from sqlalchemy import engine_from_config, pool

from app.models import Base

config = context.config
url = config.get_main_option("sqlalchemy.url")
if not url:
    from app.settings import Settings

    config.set_main_option("sqlalchemy.url", Settings().database_url.replace("%", "%%"))


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=Base.metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connectable = config.attributes.get("connection")
    if connectable is None:
        connectable = engine_from_config(
            config.get_section(config.config_ini_section, {}),
            prefix="sqlalchemy.",
            poolclass=pool.NullPool,
        )
    with connectable.connect() as connection:
        # Batch mode lets later revisions alter tables on SQLite, which lacks ALTER COLUMN.
        context.configure(
            connection=connection, target_metadata=Base.metadata, render_as_batch=True
        )
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
