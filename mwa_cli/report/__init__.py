"""mwa_cli.report"""
