"""mwa_cli.train"""
