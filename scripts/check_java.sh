#!/usr/bin/env bash
# Spark needs Java 17 or newer. Say so clearly when it is missing; install it where we can.
set -u
version=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1)
if [ -n "$version" ] && [ "$version" -ge 17 ]; then
  exit 0
fi
echo "ser-spark needs Java 17+ for Spark (found: ${version:-none})." >&2
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "Installing openjdk-17-jre-headless with apt-get ..." >&2
  apt-get update -qq && apt-get install -y -qq openjdk-17-jre-headless >/dev/null && exit 0
fi
echo "Install a Java 17+ runtime (e.g. 'apt-get install openjdk-17-jre-headless' or 'brew install openjdk@17') and set JAVA_HOME." >&2
exit 1
