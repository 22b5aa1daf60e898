//! Links the system OpenBLAS found through pkg-config (Debian: `libopenblas-dev`).
fn main() {
    if let Err(err) = pkg_config::Config::new().atleast_version("0.3").probe("openblas") {
        panic!(
            "tessera-engine needs the system OpenBLAS (pkg-config name `openblas`).\n\
             On Debian/Ubuntu: apt-get install -y libopenblas-dev pkg-config\n\
             pkg-config said: {err}"
        );
    }
}
