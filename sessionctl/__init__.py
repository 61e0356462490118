"""sessionctl: bulk maintenance of Agno agent sessions in Postgres, as arq jobs."""

__version__ = "0.2.0"
