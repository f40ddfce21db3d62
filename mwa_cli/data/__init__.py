"""mwa_cli.data"""
