"""`wwfast configure`: configuration files for the services around provisioning."""
