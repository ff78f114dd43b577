fn main() -> std::process::ExitCode {
    syncgate::run()
}
