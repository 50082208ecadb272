from services.common.migrate import run_migrations
from services.payments.models import Base

run_migrations(Base.metadata)
