from services.common.migrate import run_migrations
from services.carts.models import Base

run_migrations(Base.metadata)
