"""mwa_cli.eval"""
