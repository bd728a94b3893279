//! The server checked by a client we did not write: Python's ftplib (FTP and FTP_TLS), on each
//! storage back-end (a folder, and S3 on a real SeaweedFS).

mod common;

use common::*;

const SUITE: &str = r#"
import ftplib, io, os, ssl, sys
port = int(os.environ['PORT']); pw = os.environ['PASS']; tls = os.environ.get('CERT')
def connect(user, password):
    if tls:
        ctx = ssl.create_default_context(cafile=tls)
        f = ftplib.FTP_TLS(context=ctx)
        f.connect('localhost', port, timeout=20)
        f.login(user, password)
        f.prot_p()
    else:
        f = ftplib.FTP()
        f.connect('127.0.0.1', port, timeout=20)
        f.login(user, password)
    return f
def refused(fn):
    try:
        fn()
    except ftplib.error_perm as e:
        return str(e)[:3]
    raise AssertionError('not refused')

# refused login
assert refused(lambda: connect('agent01', 'wrong password')) == '530'
f = connect('agent01', pw)
assert f.pwd() == '/'
f.mkd('Logs'); f.cwd('Logs'); f.mkd('20240723'); f.cwd('20240723')
payload = b'a\nb\r\nc\n' * 1000 + bytes(range(256))
f.storbinary('STOR a.txt', io.BytesIO(payload))
f.storbinary('APPE a.txt', io.BytesIO(b'more\n'))
got = bytearray(); f.retrbinary('RETR a.txt', got.extend)
assert bytes(got) == payload + b'more\n', 'round trip'
assert f.size('a.txt') == len(payload) + 5
assert f.nlst() == ['a.txt'], f.nlst()
facts = list(f.mlsd())
assert facts[0][0] == 'a.txt' and facts[0][1]['type'] == 'file', facts
lines = []; f.retrlines('LIST', lines.append); assert 'a.txt' in lines[0], lines
import hashlib
assert f.sendcmd('SITE SHA256 /Logs/20240723/a.txt') == '213 ' + hashlib.sha256(payload + b'more\n').hexdigest()
# the agent preset: no delete, no overwrite, no renaming final names away
assert refused(lambda: f.delete('a.txt')) == '550'
assert refused(lambda: f.storbinary('STOR a.txt', io.BytesIO(b'x'))) == '550'
assert refused(lambda: f.rename('a.txt', 'b.txt')) == '550'
# resume a temporary upload with REST, then rename it to a free final name
f.storbinary('STOR .b.txt.logarchive-tmp', io.BytesIO(b'0123456789'))
f.storbinary('STOR .b.txt.logarchive-tmp', io.BytesIO(b'abcdef'), rest=10)
f.rename('.b.txt.logarchive-tmp', 'b.txt')
got = bytearray(); f.retrbinary('RETR b.txt', got.extend, rest=4)
assert bytes(got) == b'456789abcdef', got
# escapes stay inside the home
f.cwd('/../../..')
assert set(f.nlst()) == {'Logs'}, f.nlst()
assert refused(lambda: f.retrbinary('RETR /../agent02/secret.txt', print))[:1] == '5'
# active mode (PORT) is not offered: no bounce attacks
f.set_pasv(False)
try:
    f.retrbinary('RETR /Logs/20240723/a.txt', lambda b: None)
    raise AssertionError('active mode worked')
except (ftplib.error_perm, ftplib.error_temp, ftplib.error_reply):
    pass
f.quit()
print('ok')
"#;

async fn run_suite(s: &TestServer) {
    let mut env = vec![
        ("PORT", s.port().to_string()),
        ("PASS", PASSWORD.to_string()),
    ];
    if let Some(cert) = &s.cert {
        env.push(("CERT", cert.display().to_string()));
    }
    let out = python(SUITE, &env).await;
    assert_eq!(out.trim(), "ok");
}

async fn plain(backend: Backend) {
    let s = TestServer::start_on(backend).await;
    s.add("agent01", Role::Agent);
    s.add("agent02", Role::Agent);
    s.put("/agent02/secret.txt", b"secret").await;
    run_suite(&s).await;
}

async fn tls(backend: Backend) {
    let s = TestServer::start_tls_on(backend, |_| {}).await;
    s.add("agent01", Role::Agent);
    run_suite(&s).await;
}

#[tokio::test]
async fn python_ftplib_plain() {
    plain(Backend::Local).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_ftplib_plain_on_s3() {
    plain(Backend::S3).await
}

#[tokio::test]
async fn python_ftplib_tls() {
    tls(Backend::Local).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_ftplib_tls_on_s3() {
    tls(Backend::S3).await
}

#[tokio::test]
async fn python_ftplib_lockout() {
    let s = TestServer::start_with(|c| c.login_max_failures = 2).await;
    s.add("agent01", Role::Agent);
    let out = python(
        r#"
import ftplib, os
port = int(os.environ['PORT'])
codes = []
for pw in ['bad one', 'bad two', os.environ['PASS']]:
    f = ftplib.FTP(); f.connect('127.0.0.1', port, timeout=20)
    try:
        f.login('agent01', pw); codes.append('230')
    except ftplib.error_perm as e:
        codes.append(str(e)[:3])
print(' '.join(codes))
"#,
        &[
            ("PORT", s.port().to_string()),
            ("PASS", PASSWORD.to_string()),
        ],
    )
    .await;
    assert_eq!(
        out.trim(),
        "530 530 530",
        "the right password is refused while locked out"
    );
}

#[tokio::test]
async fn an_account_that_requires_tls_gets_no_clear_text_transfers() {
    // TLS optional for the server, required for this account: after a TLS login, `PROT C` is
    // refused and a transfer without `PROT P` is refused before any data moves.
    let s = TestServer::start_tls(|_| {}).await;
    s.add("agent01", Role::Agent);
    s.require_tls("agent01");
    let out = python(
        r#"
import ftplib, io, os, ssl
ctx = ssl.create_default_context(cafile=os.environ['CERT'])
f = ftplib.FTP_TLS(context=ctx)
f.connect('localhost', int(os.environ['PORT']), timeout=20)
f.login('agent01', os.environ['PASS'])
codes = []
for step in (lambda: f.prot_c(),
             lambda: f.storbinary('STOR clear.txt', io.BytesIO(b'secret')),
             lambda: f.nlst()):
    try:
        step(); codes.append('ok')
    except ftplib.error_perm as e:
        codes.append(str(e)[:3])
f.prot_p()
f.storbinary('STOR private.txt', io.BytesIO(b'secret'))
print(' '.join(codes), sorted(f.nlst()))
"#,
        &[
            ("PORT", s.port().to_string()),
            ("PASS", PASSWORD.to_string()),
            ("CERT", s.cert.as_ref().unwrap().display().to_string()),
        ],
    )
    .await;
    assert_eq!(out.trim(), "534 521 521 ['private.txt']");
    assert_eq!(s.get("/agent01/clear.txt").await, None);
}
