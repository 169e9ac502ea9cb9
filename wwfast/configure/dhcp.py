"""`wwfast configure dhcp`: the DHCP server's configuration from the node file and the settings.

Two servers: dnsmasq (the default: a drop-in file for /etc/dnsmasq.d) and ISC dhcpd (`dhcp: template:
dhcpd`, the whole /etc/dhcp/dhcpd.conf). Warewulf's own template values (`default`, `static`) mean the
server that `dhcp: systemd name` names, so an unmodified warewulf.conf (`systemd name: dhcpd`) gets a
dhcpd configuration. The templates are Jinja2 files, built in under wwfast/data/dhcp/ and overridable
as CONF/dhcp/<same name>; the output has no timestamp, so an unchanged cluster renders the same bytes.
"""
import os
import pathlib

import jinja2

from wwfast.builder.ipxe import compile_template, script_environment
from wwfast.builder.render import template_line
from wwfast.configure.plan import dhcp_plan
from wwfast.errors import ConfigError

BUILTIN_DIR = pathlib.Path(__file__).resolve().parent.parent / "data" / "dhcp"
ISC_UNITS = ("dhcpd", "isc-dhcp-server")


class Server:
    """One DHCP server flavour: its template, default output file and systemd unit."""

    def __init__(self, name, template, config_file, unit):
        self.name, self.template, self.config_file, self.unit = name, template, config_file, unit


SERVERS = {
    "dnsmasq": Server("dnsmasq", "dnsmasq.conf.j2", "/etc/dnsmasq.d/wwfast.conf", "dnsmasq"),
    "dhcpd": Server("dhcpd", "dhcpd.conf.j2", "/etc/dhcp/dhcpd.conf", "isc-dhcp-server"),
}


def server_for(settings):
    """The Server the settings ask for (`dhcp: template`, else by `dhcp: systemd name`)."""
    template = settings.dhcp_template
    if template in SERVERS:
        return SERVERS[template]
    return SERVERS["dhcpd" if settings.dhcp_systemd_name in ISC_UNITS else "dnsmasq"]


def config_path(settings, output=None):
    return output or settings.dhcp_config_file or server_for(settings).config_file


def unit_name(settings):
    return settings.dhcp_systemd_name or server_for(settings).unit


def template_path(conf_dir, server):
    site = pathlib.Path(conf_dir) / "dhcp" / server.template
    return site if site.is_file() else BUILTIN_DIR / server.template


def render(conf_dir, settings, nodes):
    """(text of the configuration, the plan it came from)."""
    server = server_for(settings)
    path = template_path(conf_dir, server)
    plan = dhcp_plan(nodes, settings)
    template = compile_template(script_environment(), path)
    try:
        text = template.render(plan.as_template_data(conf_dir=os.fspath(conf_dir)))
    except jinja2.TemplateError as e:
        raise ConfigError(str(path), template_line(e, str(path)), "", f"template: {e}") from None
    return text, plan
