"""mwa_cli.adapters"""
