#!/usr/bin/env bash
# vendor/check.sh: checks that vendor/fred is fred 10.1.0 exactly as
# crates.io publishes it (the archive's SHA-256 is the one Cargo.lock held
# for it) with vendor/fred.patch applied, and nothing else. Needs network
# access to static.crates.io. See vendor/README.md.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
version=10.1.0
sum=3a7b2fd0f08b23315c13b6156f971aeedb6f75fb16a29ac1872d2eabccc1490e
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
curl -sSfL --retry 3 -o "$tmp/fred.crate" "https://static.crates.io/crates/fred/fred-$version.crate"
echo "$sum  $tmp/fred.crate" | sha256sum --check --quiet
tar -xzf "$tmp/fred.crate" -C "$tmp"
(cd "$tmp/fred-$version" && git apply -p1 "$OLDPWD/fred.patch")
diff -r "$tmp/fred-$version" fred
echo "vendor/check.sh: vendor/fred is fred $version from crates.io with vendor/fred.patch, and nothing else"
