//! A folder far bigger than memory downloads as a zip from the real `logarchive server` while
//! the server's memory stays flat (measured on the server process itself).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

mod support;
use support::{base64, server_command, start_server};

fn vm_hwm_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[test]
fn a_3_gib_folder_zips_in_constant_server_memory() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    for i in 0..3 {
        let p = data.join(format!("archive/agent01/Logs/day{i}/big{i}.log"));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let f = std::fs::File::create(&p).unwrap();
        f.set_len(1 << 30).unwrap(); // sparse: costs no disk
        use std::os::unix::fs::FileExt;
        f.write_at(format!("file {i} starts\n").as_bytes(), 0)
            .unwrap();
    }
    std::fs::write(data.join("archive/agent01/Logs/small.txt"), b"small file\n").unwrap();
    let server = start_server(server_command(&data, "127.0.0.1:0"));
    let web = server.web.clone();
    let password = server
        .admin_password
        .clone()
        .expect("the first start prints the admin password");
    let pid = server.child.id();
    // The catalog is reconciled at start in the background: wait for the 4 files.
    let auth = base64(format!("admin:{password}").as_bytes());
    let get = |path: &str| -> (String, Box<dyn Read>) {
        let mut s = TcpStream::connect(&web).unwrap();
        // HTTP/1.0: the body ends when the server closes, no chunked decoding needed.
        write!(
            s,
            "GET {path} HTTP/1.0\r\nHost: {web}\r\nAuthorization: Basic {auth}\r\n\r\n"
        )
        .unwrap();
        let mut r = BufReader::new(s);
        let mut head = String::new();
        loop {
            let mut l = String::new();
            r.read_line(&mut l).unwrap();
            if l == "\r\n" || l.is_empty() {
                break;
            }
            head.push_str(&l);
        }
        (head, Box::new(r))
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, mut body) = get("/api/v1/search?q=.&limit=10");
        let mut s = String::new();
        body.read_to_string(&mut s).unwrap();
        if s.matches("\"path\"").count() == 4 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "catalog never held the files: {s}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let before = vm_hwm_kib(pid);
    let (head, mut body) = get("/api/v1/download/agent01/Logs");
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    assert!(head.contains("application/zip"), "{head}");
    let out = d.path().join("Logs.zip");
    let mut f = std::fs::File::create(&out).unwrap();
    let n = std::io::copy(&mut body, &mut f).unwrap();
    assert!(n > 3 << 30, "{n} bytes");
    let grew_mib = vm_hwm_kib(pid).saturating_sub(before) / 1024;
    assert!(
        grew_mib < 32,
        "server peak memory grew by {grew_mib} MiB while zipping 3 GiB"
    );
    let check = Command::new("python3")
        .arg("-c")
        .arg(
            "import sys, zipfile\n\
             z = zipfile.ZipFile(sys.argv[1])\n\
             assert z.testzip() is None\n\
             names = sorted(z.namelist())\n\
             assert names == ['Logs/day0/big0.log', 'Logs/day1/big1.log', 'Logs/day2/big2.log', 'Logs/small.txt'], names\n\
             assert z.read('Logs/small.txt') == b'small file\\n'\n\
             assert z.getinfo('Logs/day2/big2.log').file_size == 1 << 30\n\
             assert z.open('Logs/day1/big1.log').read(14) == b'file 1 starts\\n'\n",
        )
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}
