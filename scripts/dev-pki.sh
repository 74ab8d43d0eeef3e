#!/usr/bin/env bash
# Development PKI for spbridge: a throwaway CA and every certificate the service, its
# clients, its FHIR peer and the negative tests need. DEVELOPMENT AND TESTS ONLY: the keys
# are unprotected files and the CA is trusted by nothing real. See docs/dev-pki.md.
#
#   scripts/dev-pki.sh [--force] DIR
#
# Creates what is missing in DIR and keeps what is there (a file that does not fit the rest,
# e.g. a certificate whose CA is gone, stops the script instead of being overwritten);
# --force first removes everything this script makes and starts again. Needs the `openssl`
# command line (OpenSSL 3.0 or later) and what every Debian has (bash, coreutils, grep,
# sed, cmp).
set -euo pipefail

usage() { # EXIT-CODE: --help prints on stdout and exits 0, wrong usage on stderr and exits 2
  local text="usage: $0 [--force] DIR
  Creates what is missing of spbridge's development CA and test certificates in DIR and
  keeps what is there; --force removes all of it first. See docs/dev-pki.md."
  if [ "$1" = 0 ]; then echo "$text"; else echo "$text" >&2; fi
  exit "$1"
}

force=0
dir=
while [ $# -gt 0 ]; do
  case $1 in
    --force) force=1 ;;
    -h | --help) usage 0 ;;
    --) shift; [ $# -eq 1 ] || usage 2; dir=$1 ;;
    -*) echo "dev-pki: unknown option $1" >&2; usage 2 ;;
    *) [ -z "$dir" ] || usage 2; dir=$1 ;;
  esac
  shift
done
[ -n "$dir" ] || usage 2
command -v openssl >/dev/null || { echo "dev-pki: openssl not found (apt-get install openssl)" >&2; exit 1; }

die() { echo "dev-pki: $*" >&2; exit 1; }

mkdir -p -- "$dir"
cd -- "$dir"
dir=$(pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# ---------------------------------------------------------------- what is made
# name|issuer|subject|SAN ("-" for none)|extendedKeyUsage|days
ca_subject="/CN=spbridge development CA"
other_subject="/CN=spbridge unrelated development CA (must not be trusted)"
b83002_subject="/O=NHS/OU=B83002/CN=B83002 Ilkley and Wharfedale Medical Practice"
leaves=(
  "server|ca|/CN=localhost|DNS:localhost,IP:127.0.0.1,IP:::1|serverAuth|730"
  "practice-B83002|ca|$b83002_subject|URI:urn:ods:B83002|clientAuth|730"
  "practice-Y01234|ca|/O=NHS/OU=Y01234/CN=Y01234 Moorside Surgery|URI:urn:ods:Y01234|clientAuth|730"
  "service|ca|/O=NHS/OU=X26SP1/CN=Wharfedale Social Prescribing Service|URI:urn:ods:X26SP1|clientAuth|730"
  "peer|ca|/CN=localhost|DNS:localhost,IP:127.0.0.1|serverAuth,clientAuth|730"
  "spbridge-client|ca|/CN=spbridge|-|clientAuth|730"
  "auditor-Y63|ca|/O=NHS/OU=Y63/CN=NHS North East and Yorkshire auditor|URI:urn:nhs-region:Y63|clientAuth|730"
  "admin|ca|/CN=spbridge administrator|-|clientAuth|730"
  "foreign-B83002|other-ca|$b83002_subject|URI:urn:ods:B83002|clientAuth|730"
  "expired-B83002|ca|$b83002_subject|URI:urn:ods:B83002|clientAuth|expired"
  "revoked-B83002|ca|$b83002_subject|URI:urn:ods:B83002|clientAuth|730"
)
enc_key=spbridge-client-enc.key
pass_file=spbridge-client.pass

managed=(ca.pem ca.key other-ca.pem other-ca.key crl.pem fingerprints.txt "$enc_key" "$pass_file")
for l in "${leaves[@]}"; do managed+=("${l%%|*}.pem" "${l%%|*}.key"); done

if [ $force = 1 ]; then
  rm -f -- "${managed[@]}"
  rm -rf -- ca-db
fi

# ---------------------------------------------------------------- helpers
# run CMD...: quiet unless it fails, then show what it said.
run() {
  if ! "$@" >"$work/out" 2>&1; then
    cat "$work/out" >&2
    die "failed: $*"
  fi
}
newkey() {
  (umask 077 && run openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
    -pkeyopt ec_param_enc:named_curve -out "$1")
  chmod 600 "$1"
}
pubkey_of_cert() { openssl x509 -in "$1" -noout -pubkey 2>/dev/null; }
pubkey_of_key() { openssl pkey -in "$1" -pubout "${@:2}" 2>/dev/null; }
# signed_by CERT CA: CERT chains to CA (validity dates and revocation ignored).
signed_by() { openssl verify -no_check_time -CAfile "$2" "$1" >/dev/null 2>&1; }
serial_of() { openssl x509 -in "$1" -noout -serial | sed 's/^serial=//'; }

created=()
kept=()

# The OpenSSL configuration used by `req` and `ca`. Paths are relative to DIR; a copy is
# left in ca-db/ca.cnf for revoking by hand (run from DIR, see docs/dev-pki.md).
cat >"$work/ca.cnf" <<'EOF'
# spbridge development CA (scripts/dev-pki.sh); run `openssl ca -config ca-db/ca.cnf` from
# the PKI folder. Development and tests only.
[req]
distinguished_name = req_dn
[req_dn]

[v3_ca]
basicConstraints = critical, CA:true
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always

[ca]
default_ca = spbridge_dev_ca

[spbridge_dev_ca]
dir = ca-db
database = $dir/index.txt
new_certs_dir = $dir/certs
crlnumber = $dir/crlnumber
certificate = ca.pem
private_key = ca.key
rand_serial = yes
default_md = sha256
default_days = 730
default_crl_days = 3650
policy = policy_any
preserve = yes
email_in_dn = no
unique_subject = no
copy_extensions = none
crl_extensions = crl_ext

[policy_any]
organizationName = optional
organizationalUnitName = optional
commonName = supplied

[crl_ext]
authorityKeyIdentifier = keyid:always
EOF

# ---------------------------------------------------------------- check what is there
# Nothing is overwritten: every existing piece must fit the rest, or the script stops
# before it writes anything.
declare -A state # name -> kept | reuse-key | new
check_pair() {   # NAME ISSUER-NAME (or "self")
  local name=$1 issuer=$2
  if [ -e "$name.pem" ] && [ -e "$name.key" ]; then
    [ "$(pubkey_of_cert "$name.pem")" = "$(pubkey_of_key "$name.key")" ] ||
      die "$dir/$name.pem does not belong to $name.key; remove both or use --force"
    local ca=$issuer.pem
    [ "$issuer" = self ] && ca=$name.pem
    [ -e "$ca" ] || die "$dir/$name.pem exists but its CA $ca does not; remove it or use --force"
    signed_by "$name.pem" "$ca" ||
      die "$dir/$name.pem was not issued by $ca; remove it or use --force"
    state[$name]=kept
  elif [ -e "$name.pem" ]; then
    die "$dir/$name.pem exists without its key $name.key; remove it or use --force"
  elif [ -e "$name.key" ]; then
    state[$name]=reuse-key
  else
    state[$name]=new
  fi
}
check_pair ca self
check_pair other-ca self
for l in "${leaves[@]}"; do
  IFS='|' read -r name issuer _ <<<"$l"
  check_pair "$name" "$issuer"
done
if [ "${state[ca]}" != kept ] && [ -s ca-db/index.txt ]; then
  die "$dir/ca-db records certificates of a CA that is gone; remove ca-db or use --force"
fi
if [ -e "$enc_key" ]; then
  [ -e "$pass_file" ] || die "$dir/$enc_key exists without $pass_file; remove it or use --force"
  if [ "${state[spbridge-client]}" = new ] ||
    [ "$(pubkey_of_key "$enc_key" -passin "file:$pass_file")" != "$(pubkey_of_key spbridge-client.key)" ]; then
    die "$dir/$enc_key is not spbridge-client.key under $pass_file; remove it or use --force"
  fi
fi
if [ -e crl.pem ] && [ "${state[ca]}" = kept ]; then
  # `openssl crl -CAfile` (3.0) prints "verify failure" but still exits 0: read what it says.
  [ "$(openssl crl -in crl.pem -CAfile ca.pem -noout 2>&1)" = "verify OK" ] ||
    die "$dir/crl.pem was not issued by ca.pem; remove it or use --force"
elif [ -e crl.pem ]; then
  die "$dir/crl.pem exists but its CA does not; remove it or use --force"
fi

# ---------------------------------------------------------------- make what is missing
make_ca() { # NAME SUBJECT
  local name=$1 subject=$2
  [ "${state[$name]}" = kept ] && { kept+=("$name.pem" "$name.key"); return; }
  if [ "${state[$name]}" = new ]; then newkey "$name.key"; created+=("$name.key"); else kept+=("$name.key"); fi
  run openssl req -x509 -new -config "$work/ca.cnf" -extensions v3_ca -key "$name.key" \
    -subj "$subject" -days 3650 -sha256 -out "$name.pem"
  created+=("$name.pem")
}
make_ca ca "$ca_subject"
make_ca other-ca "$other_subject"

if [ ! -d ca-db ]; then
  mkdir -p ca-db/certs
  : >ca-db/index.txt
  echo 'unique_subject = no' >ca-db/index.txt.attr
  echo 01 >ca-db/crlnumber
fi
[ -e ca-db/ca.cnf ] || cp "$work/ca.cnf" ca-db/ca.cnf

revoked_now=0
make_leaf() { # NAME ISSUER SUBJECT SAN EKU DAYS
  local name=$1 issuer=$2 subject=$3 san=$4 eku=$5 days=$6
  [ "${state[$name]}" = kept ] && { kept+=("$name.pem" "$name.key"); return; }
  if [ "${state[$name]}" = new ]; then newkey "$name.key"; created+=("$name.key"); else kept+=("$name.key"); fi
  {
    echo "[leaf]"
    echo "basicConstraints = critical, CA:false"
    echo "keyUsage = critical, digitalSignature"
    echo "extendedKeyUsage = $eku"
    echo "subjectKeyIdentifier = hash"
    echo "authorityKeyIdentifier = keyid:always"
    [ "$san" = - ] || echo "subjectAltName = $san"
  } >"$work/$name.ext"
  run openssl req -new -config "$work/ca.cnf" -key "$name.key" -subj "$subject" -out "$work/$name.csr"
  if [ "$issuer" = ca ]; then
    local validity=(-days "$days")
    if [ "$days" = expired ]; then
      # OpenSSL 3.0's x509/req have no -not_before/-not_after; `ca` takes explicit dates.
      validity=(-startdate "$(date -u -d '30 days ago' +%Y%m%d%H%M%SZ)"
        -enddate "$(date -u -d '1 day ago' +%Y%m%d%H%M%SZ)")
    fi
    run openssl ca -batch -config "$work/ca.cnf" -notext -in "$work/$name.csr" -out "$name.pem" \
      "${validity[@]}" -extfile "$work/$name.ext" -extensions leaf
  else
    run openssl x509 -req -in "$work/$name.csr" -CA "$issuer.pem" -CAkey "$issuer.key" \
      -days "$days" -sha256 -extfile "$work/$name.ext" -extensions leaf -out "$name.pem"
  fi
  created+=("$name.pem")
  if [ "$name" = revoked-B83002 ]; then
    run openssl ca -config "$work/ca.cnf" -revoke "$name.pem" -crl_reason keyCompromise
    revoked_now=1
  fi
}
for l in "${leaves[@]}"; do
  IFS='|' read -r name issuer subject san eku days <<<"$l"
  make_leaf "$name" "$issuer" "$subject" "$san" "$eku" "$days"
done

# The same key as spbridge-client.key, PKCS#8 encrypted with AES-256-CBC under a random
# passphrase kept beside it.
if [ -e "$pass_file" ]; then
  kept+=("$pass_file")
else
  (umask 077 && openssl rand -hex 24 >"$pass_file")
  created+=("$pass_file")
fi
chmod 600 "$pass_file"
if [ -e "$enc_key" ]; then
  kept+=("$enc_key")
else
  (umask 077 && run openssl pkey -in spbridge-client.key -aes-256-cbc -passout "file:$pass_file" -out "$enc_key")
  created+=("$enc_key")
fi

# crl.pem is reissued when it is missing or does not list revoked-B83002 (because that
# certificate was just made); otherwise kept.
revoked_serial=$(serial_of revoked-B83002.pem)
crl_lists() { openssl crl -in crl.pem -noout -text 2>/dev/null | grep -q "Serial Number: $revoked_serial\$"; }
if [ -e crl.pem ] && [ $revoked_now = 0 ] && crl_lists; then
  kept+=(crl.pem)
else
  # The revocation must be in the database even if ca-db was lost since it was issued.
  if ! grep -q $'^R\t[^\t]*\t[^\t]*\t'"$revoked_serial"$'\t' ca-db/index.txt; then
    run openssl ca -config "$work/ca.cnf" -revoke revoked-B83002.pem -crl_reason keyCompromise
  fi
  run openssl ca -config "$work/ca.cnf" -gencrl -out crl.pem
  crl_lists || die "crl.pem does not list revoked-B83002.pem ($revoked_serial)"
  created+=(crl.pem)
fi

for f in "${managed[@]}"; do
  case $f in
    *.key | *.pass) chmod 600 "$f" ;;
    *.pem) chmod 644 "$f" ;;
  esac
done

# fingerprints.txt is derived from the certificates: rewritten only when it would change.
# The subject is in X509_NAME_oneline form (/O=.../CN=...), as spbridge compares it; the
# pin is curl's sha256//BASE64 of the public key, as [delivery] pinned_public_key takes it.
{
  echo "# spbridge development PKI (scripts/dev-pki.sh): leaf certificates; development and tests only"
  printf '# file\tSHA-256 fingerprint\tsubject\tpublic key pin\n'
  for l in "${leaves[@]}"; do
    name=${l%%|*}
    fp=$(openssl x509 -in "$name.pem" -noout -fingerprint -sha256)
    subject=$(openssl x509 -in "$name.pem" -noout -subject -nameopt compat)
    pin=$(openssl x509 -in "$name.pem" -noout -pubkey | openssl pkey -pubin -outform DER |
      openssl dgst -sha256 -binary | openssl base64 -A)
    printf '%s\t%s\t%s\tsha256//%s\n' "$name.pem" "${fp#*=}" "${subject#subject=}" "$pin"
  done
} >"$work/fingerprints.txt"
if [ -e fingerprints.txt ] && cmp -s "$work/fingerprints.txt" fingerprints.txt; then
  kept+=(fingerprints.txt)
else
  cp "$work/fingerprints.txt" fingerprints.txt
  chmod 644 fingerprints.txt
  created+=(fingerprints.txt)
fi

# ---------------------------------------------------------------- summary
echo "spbridge development PKI in $dir (development and tests only, never production)"
echo "  created: ${#created[@]} file(s)${created[*]:+: ${created[*]}}"
echo "  kept:    ${#kept[@]} file(s)"
echo "  CA:      ca.pem \"$(openssl x509 -in ca.pem -noout -subject -nameopt RFC2253 | sed 's/^subject=//')\", $(openssl x509 -in ca.pem -noout -enddate)"
echo "  CRL:     crl.pem revokes revoked-B83002.pem (serial $revoked_serial)"
echo "  leaves:  ${#leaves[@]}, fingerprints and subjects in fingerprints.txt"
