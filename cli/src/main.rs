use tessera_engine::cpu::CpuBackend;
use tessera_engine::gpu::list_adapters;
fn main() {
    for a in list_adapters() { println!("{a:?}"); }
    println!("{}", CpuBackend::global().describe());
}
