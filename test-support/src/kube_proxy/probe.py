import errno, json, os, socket, sys, threading, time
flows = json.loads(sys.argv[1])
lock = threading.Lock()
RECVERR = {socket.AF_INET: (socket.IPPROTO_IP, 11), socket.AF_INET6: (socket.IPPROTO_IPV6, 25)}
def family(ip):
    return socket.AF_INET6 if ":" in ip else socket.AF_INET
def key(ip, port):
    return (socket.inet_pton(family(ip), ip), int(port))
def raise_queued(s):
    # An ICMP error that arrives while connect() still holds the socket (on veths the whole
    # round trip can happen inside the call) is dropped (TcpExtLockDroppedIcmps), which IPv6
    # does not make up for until the SYN is retransmitted; with IP_RECVERR it is queued.
    s.settimeout(0)
    try:
        _, anc, _, _ = s.recvmsg(1, 1024, socket.MSG_ERRQUEUE)
    except OSError:
        anc = []
    s.settimeout(1.0)
    for _, _, data in anc:
        err = int.from_bytes(data[:4], sys.byteorder)
        raise OSError(err, os.strerror(err))
def once(f):
    udp = f["proto"] == "udp"
    fam = family(f["dst"])
    s = socket.socket(fam, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
    s.setsockopt(*RECVERR[fam], 1)
    s.settimeout(1.0)
    t = time.monotonic()
    try:
        s.bind((f["src"], 0))
        try:
            s.connect((f["dst"], f["port"]))
            raise_queued(s)
            if udp:
                s.send(b"?")
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(512)
                if not chunk:
                    break
                data += chunk
        except (socket.timeout, TimeoutError):
            raise_queued(s)
            raise
        return "OK " + data.decode().strip()
    except ConnectionRefusedError:
        return "REFUSED %.3f" % (time.monotonic() - t)
    except PermissionError as e:
        return "DROPPED-LOCALLY" if e.errno == errno.EPERM else "ERROR " + str(e)
    except (socket.timeout, TimeoutError):
        return "TIMEOUT"
    except OSError as e:
        return "ERROR " + str(e)
    finally:
        s.close()
def run(i, f):
    want = {key(ip, port) for ip, port in f["want"]}
    seen = set()
    for n in range(f["tries"]):
        line = once(f)
        with lock:
            print(i, line, flush=True)
        words = line.split(" ")
        if words[0] != "OK" or len(words) != 5:
            break
        seen.add(key(words[2], words[3]))
        if n + 1 >= f["least"] and want <= seen:
            break
threads = [threading.Thread(target=run, args=(i, f)) for i, f in enumerate(flows)]
for t in threads:
    t.start()
for t in threads:
    t.join()
