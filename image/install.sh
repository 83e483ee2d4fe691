#!/bin/sh
# Runs as root inside the image being built, from the Dockerfile's RUN (docker build) and from
# image/build.py (the same RUN, in a chroot of a debootstrap): one definition of what the image holds.
#   install.sh SRC   SRC holds the source tree's pyproject.toml, setup.py, README.md, webhook/, policies/
set -eu
SRC=$1
PACKAGES="python3 python3-venv"

# debian:bookworm-slim has neither; image/build.py's debootstrap includes them already (it reads
# the PACKAGES line above), so that build needs no apt-get here.
if ! dpkg-query -W $PACKAGES >/dev/null 2>&1; then
	echo "install.sh: apt-get install $PACKAGES"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $PACKAGES >/dev/null
fi
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/apt/archives/*.deb \
	/usr/share/doc/* /usr/share/man/* /usr/share/info/* /usr/share/locale/*

# The package and every dependency it declares, nothing else: a missing declaration fails here
# (or at the first start), not only for users.
echo "install.sh: pip install $SRC"
python3 -m venv /opt/fluxwarden
# pip compiles the bytecode now: the root filesystem is read-only at run time.
/opt/fluxwarden/bin/pip install --quiet --no-cache-dir --disable-pip-version-check "$SRC"
/opt/fluxwarden/bin/pip uninstall --yes --quiet pip

useradd --uid 65532 --user-group --no-create-home --shell /usr/sbin/nologin fluxwarden
