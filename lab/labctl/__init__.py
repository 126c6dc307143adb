"""Local lab tooling: a fleet of systemd containers standing in for the AWS VMs.

The lab runs the same playbooks as production against containers built from a Debian 13
rootfs, so everything here is about making those containers look like EC2 instances:
private addresses in two "availability zones", SSH through a bastion, apt through a cache.
"""
