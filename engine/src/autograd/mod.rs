//! Reverse-mode autograd, micrograd-sized. A [`Var`] is a tensor plus, when it was computed
//! from something that needs a gradient, the op that made it: its inputs and a backward
//! closure. [`Var::backward`] walks that graph from a scalar loss in reverse topological order.
//!
//! As in PyTorch, the graph holds only what backward closures saved, not every value: a value
//! leaves memory when the last `Var` holding it is dropped, unless a backward rule saved it.
//! Back-propagating frees the graph as it goes: once an op's backward has run, the tensors it
//! saved are released, so activations leave memory while gradients arrive. A second
//! `backward` through the same graph is an error.
//!
//! Under [`autocast`] (mixed precision on a GPU) rules save activations in f16 ([`MixedTensor`]),
//! once per value however many rules save it, and convolutions and products multiply f16
//! operands with f32 accumulation.
//!
//! Freezing is just `requires_grad = false` on a leaf. An op whose inputs all lack
//! `requires_grad` records nothing, and a backward closure is told which inputs need a
//! gradient and computes only those: a frozen prefix of a network runs no backward kernel.
mod ops;

pub use ops::*;

use crate::device::Device;
use crate::error::{shape_err, Error, Result};
use crate::tensor::Tensor;
use crate::tensor_f16::{HalfTensor, MixedTensor};
use std::cell::Cell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Computes the gradients of an op's inputs from the gradient of its output. `needs[i]` says
/// whether input i wants one; the closure returns `None` where it does not.
pub type BackwardFn = Box<dyn Fn(&Tensor, &[bool]) -> Result<Vec<Option<Tensor>>> + Send + Sync>;

/// Where a leaf accumulates its gradient; shared with the parameter that owns it.
pub type GradSlot = Arc<Mutex<Option<Tensor>>>;

struct Op {
    inputs: Vec<Arc<Node>>,
    backward: BackwardFn,
}

/// A value's place in the graph. It does not hold the value: consumers' backward rules keep
/// what they saved, and the value itself lives as long as some `Var` does.
struct Node {
    requires_grad: bool,
    /// Leaves that require a gradient accumulate it here.
    grad: Option<GradSlot>,
    /// The op that made this value; taken (freeing what its backward saved) by `backward`.
    op: Mutex<Option<Op>>,
    /// The op's name, kept after the op itself is freed.
    op_name: Option<&'static str>,
    /// The value's f16 copy under autocast, made by the first rule that saves it.
    half: Mutex<Option<HalfTensor>>,
}

impl Node {
    fn new(requires_grad: bool, grad: Option<GradSlot>, op_name: Option<&'static str>) -> Arc<Self> {
        Arc::new(Node { requires_grad, grad, op: Mutex::new(None), op_name, half: Mutex::new(None) })
    }
}

/// A tensor in the autograd graph: its value and its node. Cheap to clone.
#[derive(Clone)]
pub struct Var {
    value: Tensor,
    node: Arc<Node>,
}

thread_local! {
    static NO_GRAD: Cell<bool> = const { Cell::new(false) };
    static AUTOCAST: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with mixed precision on (`on`) or off, like `torch.autocast(dtype=float16)`:
/// GPU convolutions and products multiply f16 operands with f32 accumulation, and backward
/// rules save GPU activations in f16. Parameters, gradients, losses and optimizer state stay
/// f32; CPU tensors are unaffected. The caller checks the adapter (`GpuBackend::has_shader_f16`).
pub fn autocast<R>(on: bool, f: impl FnOnce() -> R) -> R {
    let before = AUTOCAST.with(|c| c.replace(on));
    let out = f();
    AUTOCAST.with(|c| c.set(before));
    out
}

/// Whether ops on `device` run in mixed precision here.
pub fn autocast_on(device: &Device) -> bool {
    AUTOCAST.with(|c| c.get()) && matches!(device, Device::Gpu(_))
}

/// Runs `f` without recording ops (evaluation, optimizer updates): like `torch.no_grad()`.
pub fn no_grad<R>(f: impl FnOnce() -> R) -> R {
    let before = NO_GRAD.with(|c| c.replace(true));
    let out = f();
    NO_GRAD.with(|c| c.set(before));
    out
}

fn grad_enabled() -> bool {
    !NO_GRAD.with(|c| c.get())
}

impl Var {
    /// A value that never needs a gradient (inputs, labels, frozen buffers).
    pub fn constant(value: Tensor) -> Self {
        Var { value, node: Node::new(false, None, None) }
    }

    /// A leaf that accumulates its gradient into a fresh slot.
    pub fn leaf(value: Tensor) -> Self {
        Self::leaf_with_slot(value, Arc::default())
    }

    /// A leaf that accumulates its gradient into `slot` (a parameter's gradient).
    pub fn leaf_with_slot(value: Tensor, slot: GradSlot) -> Self {
        Var { value, node: Node::new(true, Some(slot), None) }
    }

    /// The result of op `name` on `inputs`. Recorded only when gradients are enabled and some
    /// input requires one; otherwise `backward` is dropped at once with what it captured.
    pub fn from_op(name: &'static str, value: Tensor, inputs: &[&Var], backward: BackwardFn) -> Self {
        let var = Self::output(name, value, inputs);
        if var.requires_grad() {
            var.record(inputs, backward);
        }
        var
    }

    /// [`Var::from_op`] for a rule that saves the op's output: `rule` gets the output (to
    /// [`Var::saved`] it) and returns the backward closure. It is called only when the op is
    /// recorded.
    pub fn from_op_saving_output(name: &'static str, value: Tensor, inputs: &[&Var], rule: impl FnOnce(&Var) -> Result<BackwardFn>) -> Result<Self> {
        let var = Self::output(name, value, inputs);
        if var.requires_grad() {
            let backward = rule(&var)?;
            var.record(inputs, backward);
        }
        Ok(var)
    }

    /// The output of op `name` on `inputs`, not yet joined to them.
    fn output(name: &'static str, value: Tensor, inputs: &[&Var]) -> Self {
        let requires_grad = grad_enabled() && inputs.iter().any(|v| v.requires_grad());
        Var { value, node: Node::new(requires_grad, None, requires_grad.then_some(name)) }
    }

    /// Joins this output to `inputs` through `backward`.
    fn record(&self, inputs: &[&Var], backward: BackwardFn) {
        let op = Op { inputs: inputs.iter().map(|v| v.node.clone()).collect(), backward };
        *self.node.op.lock().expect("graph node poisoned") = Some(op);
    }

    pub fn value(&self) -> &Tensor {
        &self.value
    }

    pub fn shape(&self) -> &[usize] {
        self.value.shape()
    }

    pub fn requires_grad(&self) -> bool {
        self.node.requires_grad
    }

    /// The name of the op that produced this value, if it was recorded.
    pub fn op_name(&self) -> Option<&'static str> {
        self.node.op_name
    }

    /// The gradient accumulated in this leaf so far.
    pub fn grad(&self) -> Option<Tensor> {
        self.node.grad.as_ref().and_then(|slot| slot.lock().expect("grad slot poisoned").clone())
    }

    /// The value as a backward rule keeps it: under [`autocast`], a GPU value that no
    /// parameter holds is kept as its f16 copy (made once and shared by every rule that saves
    /// this value); otherwise the value itself.
    pub fn saved(&self) -> Result<MixedTensor> {
        let is_param = self.node.grad.is_some();
        if is_param || !autocast_on(self.value.device()) {
            return Ok(MixedTensor::F32(self.value.clone()));
        }
        let mut half = self.node.half.lock().expect("graph node poisoned");
        if half.is_none() {
            *half = Some(HalfTensor::from_tensor(&self.value)?);
        }
        Ok(MixedTensor::F16(half.clone().expect("made above")))
    }

    /// Back-propagates from this scalar, adding each leaf's gradient to what it holds.
    pub fn backward(&self) -> Result<()> {
        self.backward_with(&mut |_| {})
    }

    /// [`Var::backward`], calling `on_leaf` with a leaf's gradient slot as soon as that
    /// gradient is complete (every consumer done): data-parallel training starts reducing a
    /// bucket of gradients while the rest of the backward pass runs.
    pub fn backward_with(&self, on_leaf: &mut dyn FnMut(&GradSlot)) -> Result<()> {
        self.backward_seeded(None, on_leaf)
    }

    /// [`Var::backward_with`] from d(loss) = `seed` (a one-value tensor on the loss's device)
    /// instead of 1: dynamic loss scaling seeds with the scale, so every gradient comes out
    /// multiplied by it.
    pub fn backward_seeded(&self, seed: Option<&Tensor>, on_leaf: &mut dyn FnMut(&GradSlot)) -> Result<()> {
        if self.value.numel() != 1 {
            return Err(shape_err("backward", format!("needs a scalar loss, got shape {:?}", self.shape())));
        }
        if !self.requires_grad() {
            return Ok(());
        }
        let seed = match seed {
            Some(s) if s.numel() == 1 => s.reshape(self.shape())?,
            Some(s) => return Err(shape_err("backward", format!("the seed must be one value, got shape {:?}", s.shape()))),
            None => Tensor::from_vec(vec![1.0], self.shape(), self.value.device())?,
        };
        let key = |n: &Arc<Node>| Arc::as_ptr(n) as usize;
        let mut grads: HashMap<usize, Tensor> = HashMap::from([(key(&self.node), seed)]);
        // Consumed from the end: a node's inputs come earlier in the order, so they stay alive
        // (and their addresses unique) until their own turn.
        for node in self.topological_order().into_iter().rev() {
            let Some(grad) = grads.remove(&key(&node)) else { continue };
            let op = node.op.lock().expect("graph node poisoned").take();
            match op {
                Some(op) => {
                    let needs: Vec<bool> = op.inputs.iter().map(|n| n.requires_grad).collect();
                    let input_grads = (op.backward)(&grad, &needs)?;
                    for ((input, g), need) in op.inputs.iter().zip(input_grads).zip(needs) {
                        let Some(g) = g.filter(|_| need) else { continue };
                        let total = match grads.remove(&key(input)) {
                            Some(prev) => crate::ops::add(&prev, &g)?,
                            None => g,
                        };
                        grads.insert(key(input), total);
                    }
                }
                None if node.op_name.is_some() => {
                    return Err(Error::BackwardTwice { op: node.op_name.unwrap_or("?") });
                }
                None => {
                    if let Some(slot) = &node.grad {
                        let mut slot = slot.lock().expect("grad slot poisoned");
                        let total = match slot.take() {
                            Some(prev) => crate::ops::add(&prev, &grad)?,
                            None => grad,
                        };
                        *slot = Some(total);
                        drop(slot);
                        if let Some(slot) = &node.grad {
                            on_leaf(slot);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Nodes that require a gradient, each after all of its inputs.
    fn topological_order(&self) -> Vec<Arc<Node>> {
        let mut order = Vec::new();
        let mut seen = std::collections::HashSet::new();
        // Iterative post-order DFS: deep networks would overflow a recursive one.
        let mut stack = vec![(self.node.clone(), false)];
        while let Some((node, expanded)) = stack.pop() {
            if expanded {
                order.push(node);
                continue;
            }
            if !node.requires_grad || !seen.insert(Arc::as_ptr(&node) as usize) {
                continue;
            }
            stack.push((node.clone(), true));
            if let Some(op) = node.op.lock().expect("graph node poisoned").as_ref() {
                stack.extend(op.inputs.iter().map(|i| (i.clone(), false)));
            }
        }
        order
    }
}

impl std::fmt::Debug for Var {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Var({:?}, requires_grad={}, op={:?})", self.value, self.requires_grad(), self.op_name())
    }
}
