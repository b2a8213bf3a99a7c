#!/usr/bin/env bash
# The Python packages a lent GPU's session needs (requirements.txt) that its image lacks
# (scripts/gpu_image_packages.txt), downloaded HERE as wheels for the image's Python 3.12 into
# .whl/ (git-ignored): pass carry=[".whl"] to the device tool; scripts/gpu_session.sh installs them
# into /tmp/site and puts that on PYTHONPATH. Prints what it carries, or that nothing is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
normalise() { tr '[:upper:]_.' '[:lower:]--'; }
have=$(grep -v '^#' scripts/gpu_image_packages.txt | normalise | sort -u)
missing=()
while read -r line; do
  name=$(echo "$line" | sed 's/[<>=!~;[ ].*//' | normalise)
  [[ -z "$name" || "$name" == \#* ]] && continue
  grep -qx "$name" <<<"$have" || missing+=("$line")
done < <(grep -v '^\s*#' requirements.txt | sed '/^\s*$/d')
rm -rf .whl
if [[ ${#missing[@]} -eq 0 ]]; then
  echo "gpu_deps: the image has every package of requirements.txt; nothing to carry"
  exit 0
fi
echo "gpu_deps: the image lacks ${missing[*]}; downloading wheels for Python 3.12 into .whl/"
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl "${missing[@]}"
du -sh .whl
