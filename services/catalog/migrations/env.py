from services.catalog.models import Base
from services.common.migrate import run_migrations

run_migrations(Base.metadata)
