#!/usr/bin/env python3
"""A minimal Standard Webhooks receiver for clinicea-notifier: verifies each signature and prints
the event. Standard library only.  Usage: WEBHOOK_SECRET=whsec_... python3 receiver.py [port]"""
import base64, hashlib, hmac, json, os, sys, time
from http.server import BaseHTTPRequestHandler, HTTPServer

SECRET = base64.b64decode(os.environ["WEBHOOK_SECRET"].removeprefix("whsec_"))
TOLERANCE = 5 * 60  # seconds
seen = set()        # webhook-ids already handled (keep these in a database in real code)


def verify(headers, body: bytes) -> bool:
    msg_id = headers.get("webhook-id", "")
    ts = headers.get("webhook-timestamp", "")
    sigs = headers.get("webhook-signature", "")
    if not (msg_id and ts.isdigit() and sigs) or abs(time.time() - int(ts)) > TOLERANCE:
        return False
    signed = f"{msg_id}.{ts}.".encode() + body
    expected = base64.b64encode(hmac.new(SECRET, signed, hashlib.sha256).digest()).decode()
    # Several space-separated signatures while secrets rotate: any one valid is enough.
    return any(
        s.startswith("v1,") and hmac.compare_digest(s[3:], expected) for s in sigs.split()
    )


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        if not verify(self.headers, body):
            self.send_response(401)
            self.end_headers()
            return
        msg_id = self.headers["webhook-id"]
        if msg_id not in seen:  # at-least-once delivery: drop duplicates by webhook-id
            seen.add(msg_id)
            event = json.loads(body)
            data = event["data"]
            print(f"{event['type']:<24} id={data['id']} rule={data['rule']} "
                  f"changed={data.get('changed_fields')}", flush=True)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8000
    print(f"verifying receiver on :{port}", flush=True)
    HTTPServer(("0.0.0.0", port), Handler).serve_forever()
