"""mwa_cli.commands"""
