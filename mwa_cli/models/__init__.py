"""mwa_cli.models"""
