#!/bin/sh
# Make debian/changelog name the upstream version this tree's configure was
# made for (configure.ac's AC_INIT), by adding an UNRELEASED entry when they
# differ.  Used by tests/distro-check.sh and tests/build-variants.sh on an
# unpacked release tarball, so `dpkg-buildpackage` keeps working as the
# version moves; a real upload edits the changelog by hand.
set -e
cd "$(dirname "$0")/.."
upstream=$(sed -n "s/^PACKAGE_VERSION='\(.*\)'$/\1/p" configure 2>/dev/null)
[ -n "$upstream" ] || upstream=$(sed -n 's/^AC_INIT(\[keel\], *\[\([^]]*\)\].*/\1/p' configure.ac)
[ -n "$upstream" ] || { echo "sync-version: cannot tell the upstream version" >&2; exit 1; }
current=$(dpkg-parsechangelog -S Version)
[ "${current%-*}" = "$upstream" ] && exit 0
{
    printf 'keel (%s-1) UNRELEASED; urgency=medium\n\n' "$upstream"
    printf '  * New upstream version %s (entry added by debian/sync-version.sh).\n\n' "$upstream"
    printf ' -- Keel developers <keel-devel@lists.example.org>  %s\n\n' "$(date -R)"
    cat debian/changelog
} > debian/changelog.new
mv debian/changelog.new debian/changelog
echo "sync-version: debian/changelog now at $upstream-1 (was $current)"
