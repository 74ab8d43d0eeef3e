#!/bin/sh
# Make a throwaway PKI for the test peer with the openssl CLI:
#   DIR/ca.pem ca.key            test CA
#   DIR/server.pem server.key    server cert, CN=localhost, SAN DNS:localhost IP:127.0.0.1 IP:::1
#   DIR/client.pem client.key    client cert, CN=spbridge-test-client (clientAuth)
#   DIR/other-ca.pem other-ca.key, DIR/other-client.pem other-client.key
#                                a second CA and a client cert it signed (must be refused)
# usage: gen-certs.sh DIR [CLIENT_CN]
set -eu
dir=${1:?usage: gen-certs.sh DIR [CLIENT_CN]}
client_cn=${2:-spbridge-test-client}
mkdir -p "$dir"
cd "$dir"

ca() { # name cn
    openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 30 \
        -keyout "$1.key" -out "$1.pem" -subj "/CN=$2" \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
}
leaf() { # name cn ca extfile-contents
    openssl req -newkey rsa:2048 -nodes -sha256 -keyout "$1.key" -out "$1.csr" -subj "/CN=$2" 2>/dev/null
    printf '%s\n' "$4" > "$1.ext"
    openssl x509 -req -in "$1.csr" -CA "$3.pem" -CAkey "$3.key" -CAcreateserial -days 30 -sha256 \
        -extfile "$1.ext" -out "$1.pem" 2>/dev/null
    rm -f "$1.csr" "$1.ext"
}

ca ca "spbridge test CA"
ca other-ca "some other CA"
leaf server localhost ca "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1"
leaf client "$client_cn" ca "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
leaf other-client "$client_cn" other-ca "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
rm -f ./*.srl
chmod 600 ./*.key
echo "certificates in $(pwd)"
