"""Loading a service's YAML config the way `nameko run --config` does.

Values may be written `${VAR:default}`; nameko's own YAML constructors substitute them from the environment,
so a config file means the same thing under `nameko run`, `make run` and the tests.
"""

import yaml
from nameko.cli.main import setup_yaml_parser

setup_yaml_parser()


def load_config(path):
    """The config mapping in the YAML file at `path`, environment variables substituted."""
    with open(path) as config_file:
        return yaml.safe_load(config_file)
