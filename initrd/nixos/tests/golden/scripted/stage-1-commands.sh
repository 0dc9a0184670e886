# postResumeCommands
mkdir -p /etc/tabula
# tabula knows it runs in an initrd by /etc/initrd-release (kmsg logging, on_failure).
[ -e /etc/initrd-release ] || echo "ID=nixos-initrd" > /etc/initrd-release
cat > /etc/tabula/tabula.toml <<'TABULA_EOF'
[layout]
device = "LABEL=nixos"
device_timeout = "45s"
root = "@"
blank = "@blank"
old_roots = "@old"
persist = "@persist"

[persist]
path = "/persist"
directories = ["/var/log", "/var/lib/nixos", { path = "/var/lib/private", mode = "0700" }, { path = "/srv/git", user = 977, group = 977, mode = "0750" }]
files = ["/etc/machine-id", { path = "/etc/ssh/ssh_host_ed25519_key", mode = "0600" }]

[retention]
keep_last = 5
keep_within = "2d"
keep_daily = 7
keep_weekly = "all"
keep_monthly = 6
timezone = "Europe/Berlin"
min_free = "10%"

[boot]
on_failure = "emergency"

[[persist.users]]
name = "alice"
home = "/home/alice"
uid = 1000
gid = 100
directories = ["Downloads", { path = ".gnupg", mode = "0700" }]
files = [".netrc"]

[[persist.users]]
name = "bob"
home = "/srv/home/bob"
uid = 1001
gid = 1001
directories = [".ssh"]
files = []

TABULA_EOF
tabula rollback || fail

# postMountCommands
tabula persist --root "$targetRoot" || echo "tabula persist reported failures; booting on"