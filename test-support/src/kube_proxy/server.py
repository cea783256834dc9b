import os, socket, sys, threading
who, addrs, ports = sys.argv[1], sys.argv[2].split(","), [int(p) for p in sys.argv[3].split(",")]
def answer(local, peer):
    return ("%s %s %d %s\n" % (who, local[0], local[1], peer[0])).encode()
def tcp(s):
    while True:
        c, peer = s.accept()
        try:
            c.sendall(answer(c.getsockname(), peer))
        except OSError:
            pass
        c.close()
def udp(s):
    while True:
        _, peer = s.recvfrom(512)
        s.sendto(answer(s.getsockname(), peer), peer)
for a in addrs:
    family = socket.AF_INET6 if ":" in a else socket.AF_INET
    for p in ports:
        t = socket.socket(family, socket.SOCK_STREAM)
        t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        t.bind((a, p))
        t.listen(128)
        u = socket.socket(family, socket.SOCK_DGRAM)
        u.bind((a, p))
        for serve, s in ((tcp, t), (udp, u)):
            threading.Thread(target=serve, args=(s,), daemon=True).start()
print("READY", flush=True)
sys.stdin.read()
os._exit(0)
