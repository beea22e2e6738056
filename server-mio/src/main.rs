//! The ITG server binary.

fn main() {
    eprintln!("server-mio: the server loop is not built yet");
    std::process::exit(2);
}
