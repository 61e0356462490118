"""The DSR service over HTTP (``sessionctl serve``): the API (:mod:`.app`), tokens
(:mod:`.auth`) and the console (:mod:`.console`)."""
