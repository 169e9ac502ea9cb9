"""`wwfast configure`: configuration files for the services around provisioning (DHCP, /etc/hosts, the TFTP
root, cache hosts' nginx)."""
