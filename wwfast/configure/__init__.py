"""`wwfast configure`: the server-side services around provisioning (DHCP, /etc/hosts, the TFTP root)."""
