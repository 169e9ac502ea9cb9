"""wwfast: stateless cluster provisioning (define -> build -> compress -> serve)."""
__version__ = "0.1.0"
