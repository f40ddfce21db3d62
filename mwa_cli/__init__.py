"""mwa: adapt BEiT-3 to your inspection photos with MultiWay-Adapter and measure what it saves."""

__version__ = "0.1.0"
