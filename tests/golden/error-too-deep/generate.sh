printf "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"; for i in $(seq 300); do printf "<a>"; done; for i in $(seq 300); do printf "</a>"; done; echo
