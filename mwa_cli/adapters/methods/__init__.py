"""One module per training method (``base`` says what a method is); ``mwa_cli.adapters.registry`` registers
every module here that defines ``METHOD``."""
