"""The Lambda API driven by clients nobody here wrote: boto3, the AWS CLI v1 and (through
node) the AWS JS SDK v3, against a VoltRun server on 127.0.0.1 (SPEC §14, issue 17).

Run by crates/voltrun/tests/it/lambda_api.rs with the server's endpoint, two users' AWS keys,
a revoked key, a bearer token, and a function made natively. Every check is an assert; the
last line is `LAMBDA SUITE OK <checks>` only when all of them held.
"""
import base64
import datetime
import io
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
import zipfile

import boto3
import botocore.auth
import botocore.awsrequest
import botocore.credentials
from botocore.config import Config
from botocore.exceptions import ClientError

E = os.environ
ENDPOINT = E["VR_ENDPOINT"]
PREFIX = E["VR_PREFIX"]
CHECKS = 0


def check(cond, what):
    global CHECKS
    assert cond, what
    CHECKS += 1


def client(akid, secret, region="us-east-1"):
    cfg = Config(retries={"max_attempts": 1, "mode": "standard"}, read_timeout=120, connect_timeout=10)
    return boto3.client("lambda", endpoint_url=ENDPOINT, aws_access_key_id=akid, aws_secret_access_key=secret, region_name=region, config=cfg)


def zip_of(files):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, text in files.items():
            z.writestr(name, text)
    return buf.getvalue()


def py_zip(version):
    code = (
        "def lambda_handler(event, context):\n"
        "    print('hello from', event.get('who'))\n"
        "    if event.get('fail'):\n"
        "        raise ValueError('boom')\n"
        f"    return {{'echo': event, 'v': {version}}}\n"
    )
    return zip_of({"lambda_function.py": code})


def error_code(fn):
    """Calls fn; returns (AWS error code, HTTP status) of the ClientError it must raise."""
    try:
        fn()
    except ClientError as e:
        return e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"]
    raise AssertionError("the call succeeded but an error was expected")


def expect_error(fn, code, status, what):
    got = error_code(fn)
    check(got == (code, status), f"{what}: expected {code} {status}, got {got}")


def native(method, path, body=None):
    req = urllib.request.Request(ENDPOINT + path, method=method, data=None if body is None else json.dumps(body).encode())
    req.add_header("authorization", "Bearer " + E["VR_TOKEN"])
    req.add_header("content-type", "application/json")
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read() or b"null")


def raw(method, path, headers, body=b""):
    """A request sent as is; returns (status, x-amzn-ErrorType)."""
    req = urllib.request.Request(ENDPOINT + path, method=method, data=body or None, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.headers.get("x-amzn-ErrorType")
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("x-amzn-ErrorType")


def signed_at(when, path):
    """Headers of a GET signed by botocore's SigV4 signer as if at `when`."""
    orig = botocore.auth.get_current_datetime
    botocore.auth.get_current_datetime = lambda: when
    try:
        req = botocore.awsrequest.AWSRequest(method="GET", url=ENDPOINT + path)
        creds = botocore.credentials.Credentials(E["VR_AKID"], E["VR_SECRET"])
        botocore.auth.SigV4Auth(creds, "lambda", "us-east-1").add_auth(req)
    finally:
        botocore.auth.get_current_datetime = orig
    return dict(req.headers.items())


lam = client(E["VR_AKID"], E["VR_SECRET"])
other = client(E["VR_OTHER_AKID"], E["VR_OTHER_SECRET"], region="eu-west-1")
py = f"{PREFIX}-py"

# --- CreateFunction from a zip, the waiter ---------------------------------------------
c = lam.create_function(
    FunctionName=py, Runtime="python3.11", Role="arn:aws:iam::123456789012:role/ignored", Handler="lambda_function.lambda_handler",
    Code={"ZipFile": py_zip(1)}, Environment={"Variables": {"GREETING": "hi"}}, Timeout=10, MemorySize=128, Description="made by boto3",
)
check(c["ResponseMetadata"]["HTTPStatusCode"] == 201, c)
arn = c["FunctionArn"]
parts = arn.split(":")
check(parts[:3] == ["arn", "aws", "lambda"] and parts[3] == "us-east-1" and len(parts[4]) == 12 and parts[4].isdigit() and parts[5:] == ["function", py], arn)
account = parts[4]
check(c["Runtime"] == "python3.11" and c["Version"] == "$LATEST" and c["State"] in ("Pending", "Active"), c)
lam.get_waiter("function_active_v2").wait(FunctionName=py, WaiterConfig={"Delay": 1, "MaxAttempts": 120})
g = lam.get_function(FunctionName=py)
check(g["Configuration"]["State"] == "Active" and g["Configuration"]["LastUpdateStatus"] == "Successful", g)
check(g["Configuration"]["Environment"]["Variables"] == {"GREETING": "hi"}, g)
check(g["Configuration"]["CodeSha256"] and g["Code"]["Location"].startswith("http://127.0.0.1"), g)

# The same function in the native API: same row, same fields.
n = native("GET", f"/api/functions/{py}")
check(n["runtime"] == "python3.11" and n["handler"] == "lambda_function.lambda_handler" and n["description"] == "made by boto3" and n["package"]["kind"] == "zip", n)

# --- Invoke: RequestResponse with Tail, handler error, Event, DryRun, limits -----------
r = lam.invoke(FunctionName=py, Payload=json.dumps({"who": "boto"}), LogType="Tail")
out = json.loads(r["Payload"].read())
check(r["StatusCode"] == 200 and out == {"echo": {"who": "boto"}, "v": 1} and "FunctionError" not in r, (r, out))
check(r["ExecutedVersion"] == "$LATEST", r)
log = base64.b64decode(r["LogResult"]).decode()
check("START RequestId:" in log and "END RequestId:" in log and "REPORT RequestId:" in log and "hello from boto" in log, log)
check(len(base64.b64decode(r["LogResult"])) <= 4096, log)

r = lam.invoke(FunctionName=py, Payload=json.dumps({"fail": True}))
err = json.loads(r["Payload"].read())
check(r["StatusCode"] == 200 and r["FunctionError"] == "Unhandled", r)
check(err["errorType"] == "ValueError" and err["errorMessage"] == "boom" and isinstance(err["stackTrace"], list), err)

r = lam.invoke(FunctionName=py, InvocationType="Event", Payload=json.dumps({"who": "event"}))
check(r["StatusCode"] == 202, r)
r = lam.invoke(FunctionName=py, InvocationType="DryRun")
check(r["StatusCode"] == 204, r)
expect_error(lambda: lam.invoke(FunctionName=py, InvocationType="Event", Payload=json.dumps({"x": "a" * (300 * 1024)})), "RequestTooLargeException", 413, "event limit")
expect_error(lambda: lam.invoke(FunctionName=py, Payload=b"{not json"), "InvalidRequestContentException", 400, "bad payload")
# By ARN and by partial ARN.
r = lam.invoke(FunctionName=arn, Payload=b"{}")
check(json.loads(r["Payload"].read())["v"] == 1, "by ARN")
r = lam.invoke(FunctionName=f"{account}:function:{py}", Payload=b"{}")
check(json.loads(r["Payload"].read())["v"] == 1, "by partial ARN")

# --- Updates and the updated waiter ------------------------------------------------------
u = lam.update_function_code(FunctionName=py, ZipFile=py_zip(2))
check(u["FunctionName"] == py, u)
lam.get_waiter("function_updated_v2").wait(FunctionName=py, WaiterConfig={"Delay": 1, "MaxAttempts": 120})
r = lam.invoke(FunctionName=py, Payload=b"{}")
check(json.loads(r["Payload"].read())["v"] == 2, "new code runs")
u = lam.update_function_configuration(FunctionName=py, Timeout=20, MemorySize=256, Environment={"Variables": {"A": "1"}})
lam.get_waiter("function_updated_v2").wait(FunctionName=py, WaiterConfig={"Delay": 1, "MaxAttempts": 120})
cfg = lam.get_function_configuration(FunctionName=py)
check(cfg["Timeout"] == 20 and cfg["MemorySize"] == 256 and cfg["Environment"]["Variables"] == {"A": "1"}, cfg)
expect_error(lambda: lam.update_function_configuration(FunctionName=py, Timeout=5, RevisionId="00000000-0000-0000-0000-000000000000"), "PreconditionFailedException", 412, "revision")

# Edited natively, seen through boto3.
native("PUT", f"/api/functions/{py}", {"description": "edited natively"})
check(lam.get_function_configuration(FunctionName=py)["Description"] == "edited natively", "native edit visible")

# --- A function made natively, through boto3 --------------------------------------------
nat = E["VR_NATIVE"]
g = lam.get_function(FunctionName=nat)
check(g["Configuration"]["Runtime"] == "python3.11" and g["Configuration"]["State"] == "Active", g)
r = lam.invoke(FunctionName=nat, Payload=json.dumps({"n": 4}))
check(json.loads(r["Payload"].read()) == {"double": 8}, "native function invoked")

# --- Node through boto3 --------------------------------------------------------------------
node = f"{PREFIX}-node"
lam.create_function(FunctionName=node, Runtime="nodejs20.x", Role="arn:aws:iam::1:role/x", Handler="index.handler",
                    Code={"ZipFile": zip_of({"index.js": "exports.handler = async (e) => ({ node: true, got: e });\n"})})
lam.get_waiter("function_active_v2").wait(FunctionName=node, WaiterConfig={"Delay": 1, "MaxAttempts": 120})
r = lam.invoke(FunctionName=node, Payload=json.dumps({"k": 1}))
check(json.loads(r["Payload"].read()) == {"node": True, "got": {"k": 1}}, "node")
check(lam.get_function_configuration(FunctionName=node)["Runtime"] == "nodejs20.x", "node runtime name")

# --- ListFunctions with pagination ------------------------------------------------------
for i in range(3):
    lam.create_function(FunctionName=f"{PREFIX}-l{i}", Runtime="python3.11", Role="r", Handler="lambda_function.lambda_handler", Code={"ZipFile": py_zip(9)})
page = lam.list_functions(MaxItems=2)
check(len(page["Functions"]) == 2 and page.get("NextMarker"), page)
names = []
for p in lam.get_paginator("list_functions").paginate(PaginationConfig={"PageSize": 2}):
    names += [f["FunctionName"] for f in p["Functions"]]
want = {py, node, nat} | {f"{PREFIX}-l{i}" for i in range(3)}
check(want <= set(names) and len(names) == len(set(names)), names)

# --- PublishVersion, ListVersionsByFunction, aliases with a RoutingConfig -----------------
v = lam.publish_version(FunctionName=py)
latest = v["Version"]
check(latest.isdigit() and int(latest) >= 3 and v["FunctionArn"].endswith(":" + latest), v)
vs = []
for p in lam.get_paginator("list_versions_by_function").paginate(FunctionName=py, PaginationConfig={"PageSize": 2}):
    vs += [x["Version"] for x in p["Versions"]]
check(vs[0] == "$LATEST" and "1" in vs and latest in vs and len(vs) == len(set(vs)), vs)
r = lam.invoke(FunctionName=py, Qualifier=latest, Payload=b"{}")
check(r["ExecutedVersion"] == latest and json.loads(r["Payload"].read())["v"] == 2, r)
r = lam.invoke(FunctionName=py, Qualifier="1", Payload=b"{}")
check(r["ExecutedVersion"] == "1" and json.loads(r["Payload"].read())["v"] == 1, "version 1 keeps its code")
check(lam.get_function_configuration(FunctionName=py, Qualifier="1")["Timeout"] == 10, "version 1 keeps its configuration")

a = lam.create_alias(FunctionName=py, Name="live", FunctionVersion="1", Description="prod")
check(a["AliasArn"] == arn + ":live" and a["FunctionVersion"] == "1", a)
r = lam.invoke(FunctionName=py, Qualifier="live", Payload=b"{}")
check(r["ExecutedVersion"] == "1" and json.loads(r["Payload"].read())["v"] == 1, "alias runs its version")
r = lam.invoke(FunctionName=arn + ":live", Payload=b"{}")
check(r["ExecutedVersion"] == "1", "alias by qualified ARN")
check(lam.get_function(FunctionName=py, Qualifier="live")["Configuration"]["Version"] == "1", "GetFunction through an alias")
u = lam.update_alias(FunctionName=py, Name="live", RoutingConfig={"AdditionalVersionWeights": {latest: 0.5}})
check(u["RoutingConfig"]["AdditionalVersionWeights"] == {latest: 0.5}, u)
check(lam.get_alias(FunctionName=py, Name="live")["RoutingConfig"]["AdditionalVersionWeights"] == {latest: 0.5}, "get_alias")
ran = set()
for _ in range(24):
    r = lam.invoke(FunctionName=py, Qualifier="live", Payload=b"{}")
    ran.add(r["ExecutedVersion"])
check(ran == {"1", latest}, ran)
native_aliases = native("GET", f"/api/functions/{py}/aliases")["items"]
check([x["name"] for x in native_aliases] == ["live"] and native_aliases[0]["weights"] == {latest: 0.5}, native_aliases)
check([x["Name"] for x in lam.list_aliases(FunctionName=py)["Aliases"]] == ["live"], "list_aliases")
check([x["Name"] for x in lam.list_aliases(FunctionName=py, FunctionVersion="1")["Aliases"]] == ["live"], "list_aliases by version")
expect_error(lambda: lam.delete_function(FunctionName=py, Qualifier="1"), "ResourceConflictException", 409, "delete a version an alias points to")
expect_error(lambda: lam.create_alias(FunctionName=py, Name="live", FunctionVersion="1"), "ResourceConflictException", 409, "alias exists")
expect_error(lambda: lam.create_alias(FunctionName=py, Name="next", FunctionVersion="$LATEST"), "InvalidParameterValueException", 400, "alias to $LATEST")
expect_error(lambda: lam.create_alias(FunctionName=py, Name="gone", FunctionVersion="999"), "ResourceNotFoundException", 404, "alias to no version")
expect_error(lambda: lam.update_alias(FunctionName=py, Name="live", Description="x", RevisionId="00000000-0000-0000-0000-000000000000"), "PreconditionFailedException", 412, "alias revision")
u = lam.update_alias(FunctionName=py, Name="live", FunctionVersion=latest, RoutingConfig={"AdditionalVersionWeights": {}})
check(u["FunctionVersion"] == latest and "RoutingConfig" not in u, u)
check(lam.delete_alias(FunctionName=py, Name="live")["ResponseMetadata"]["HTTPStatusCode"] == 204, "delete alias")
expect_error(lambda: lam.get_alias(FunctionName=py, Name="live"), "ResourceNotFoundException", 404, "alias gone")
check(lam.delete_function(FunctionName=py, Qualifier="1")["ResponseMetadata"]["HTTPStatusCode"] == 204, "delete version 1")
expect_error(lambda: lam.invoke(FunctionName=py, Qualifier="1", Payload=b"{}"), "ResourceNotFoundException", 404, "version 1 gone")
expect_error(lambda: lam.delete_function(FunctionName=py, Qualifier=latest), "ResourceConflictException", 409, "the latest version cannot go")

# --- Account settings ---------------------------------------------------------------------
s = lam.get_account_settings()
check(s["AccountUsage"]["FunctionCount"] >= 6 and s["AccountLimit"]["CodeSizeZipped"] > 0, s)

# --- Errors: not found, conflict, invalid, unsupported -----------------------------------
expect_error(lambda: lam.get_function(FunctionName=f"{PREFIX}-nope"), "ResourceNotFoundException", 404, "not found")
expect_error(lambda: lam.create_function(FunctionName=py, Runtime="python3.11", Role="r", Handler="lambda_function.lambda_handler", Code={"ZipFile": py_zip(1)}), "ResourceConflictException", 409, "conflict")
expect_error(lambda: lam.create_function(FunctionName=f"{PREFIX}-rb", Runtime="ruby3.2", Role="r", Handler="h.h", Code={"ZipFile": py_zip(1)}), "InvalidParameterValueException", 400, "runtime")
expect_error(lambda: lam.get_function_concurrency(FunctionName=py), "UnsupportedOperationException", 400, "unsupported op")

# --- Who may: another user, wrong secret, unknown key, revoked, expired, unsigned --------
expect_error(lambda: other.get_function(FunctionName=py), "ResourceNotFoundException", 404, "other user's function by name")
expect_error(lambda: other.invoke(FunctionName=arn, Payload=b"{}"), "ResourceNotFoundException", 404, "other user's function by ARN")
check(py not in [f["FunctionName"] for f in other.list_functions()["Functions"]], "other user's list")
bad = client(E["VR_AKID"], E["VR_SECRET"][:-1] + ("A" if E["VR_SECRET"][-1] != "A" else "B"))
expect_error(lambda: bad.list_functions(), "InvalidSignatureException", 403, "wrong secret")
expect_error(lambda: client("AKIA" + "Z" * 16, "x" * 40).list_functions(), "UnrecognizedClientException", 403, "unknown key")
expect_error(lambda: client(E["VR_REVOKED_AKID"], E["VR_REVOKED_SECRET"]).list_functions(), "UnrecognizedClientException", 403, "revoked key")
now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
check(raw("GET", "/2015-03-31/functions/", signed_at(now, "/2015-03-31/functions/"))[0] == 200, "a fresh manual signature works")
check(raw("GET", "/2015-03-31/functions/", signed_at(now - datetime.timedelta(minutes=10), "/2015-03-31/functions/")) == (403, "InvalidSignatureException"), "expired date")
check(raw("GET", "/2015-03-31/functions/", {}) == (403, "UnrecognizedClientException"), "unsigned")
check(raw("POST", f"/2015-03-31/functions/{py}/invocations", {"authorization": "Bearer " + E["VR_TOKEN"]}, b"{}")[0] == 403, "a bearer token is not a signature")

# --- The AWS CLI v1 ---------------------------------------------------------------------
env = dict(os.environ, AWS_ACCESS_KEY_ID=E["VR_AKID"], AWS_SECRET_ACCESS_KEY=E["VR_SECRET"], AWS_DEFAULT_REGION="us-east-1",
           AWS_CONFIG_FILE="/dev/null", AWS_SHARED_CREDENTIALS_FILE="/dev/null", AWS_EC2_METADATA_DISABLED="true")
outfile = os.path.join(E["VR_TMP"], "cli-out.json")
p = subprocess.run([E["VR_AWS"], "lambda", "invoke", "--endpoint-url", ENDPOINT, "--function-name", py, "--payload", '{"who": "cli"}', outfile],
                   env=env, capture_output=True, text=True, timeout=120)
check(p.returncode == 0, p.stderr)
check(json.loads(p.stdout)["StatusCode"] == 200 and json.load(open(outfile)) == {"echo": {"who": "cli"}, "v": 2}, (p.stdout, open(outfile).read()))
p = subprocess.run([E["VR_AWS"], "lambda", "get-function", "--endpoint-url", ENDPOINT, "--function-name", nat], env=env, capture_output=True, text=True, timeout=120)
check(p.returncode == 0 and json.loads(p.stdout)["Configuration"]["FunctionName"] == nat, p.stderr)
p = subprocess.run([E["VR_AWS"], "lambda", "get-function", "--endpoint-url", ENDPOINT, "--function-name", f"{PREFIX}-nope"], env=env, capture_output=True, text=True, timeout=120)
check(p.returncode != 0 and "ResourceNotFoundException" in p.stderr, p.stderr)

# --- The AWS JS SDK v3 (create and invoke) -----------------------------------------------
if E.get("VR_JS_DIR"):
    zpath = os.path.join(E["VR_TMP"], "js.zip")
    with open(zpath, "wb") as f:
        f.write(zip_of({"index.js": "exports.handler = async (e) => ({ js: e.n * 3 });\n"}))
    p = subprocess.run(["node", E["VR_JS_SCRIPT"]], env=dict(env, VR_ZIP=zpath, VR_NAME=f"{PREFIX}-js", NODE_PATH=os.path.join(E["VR_JS_DIR"], "node_modules")),
                       capture_output=True, text=True, timeout=300)
    check(p.returncode == 0 and "JS OK" in p.stdout, p.stdout + p.stderr)
    check(native("GET", f"/api/functions/{PREFIX}-js")["runtime"] == "nodejs20", "the JS SDK's function natively")

# --- DeleteFunction -----------------------------------------------------------------------
d = lam.delete_function(FunctionName=node)
check(d["ResponseMetadata"]["HTTPStatusCode"] == 204, d)
expect_error(lambda: lam.get_function(FunctionName=node), "ResourceNotFoundException", 404, "deleted")
try:
    native("GET", f"/api/functions/{node}")
    check(False, "deleted natively too")
except urllib.error.HTTPError as e:
    check(e.code == 404, e)

print(f"LAMBDA SUITE OK {CHECKS}")
