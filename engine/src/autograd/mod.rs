//! Reverse-mode autograd, micrograd-sized. A [`Var`] is a tensor plus, when it was computed
//! from something that needs a gradient, the op that made it: its inputs and a backward
//! closure. [`Var::backward`] walks that graph from a scalar loss in reverse topological order.
//!
//! As in PyTorch, back-propagating frees the graph as it goes: once an op's backward has run,
//! the tensors it saved are released, so activations leave memory while gradients arrive.
//! A second `backward` through the same graph is an error.
//!
//! Freezing is just `requires_grad = false` on a leaf. An op whose inputs all lack
//! `requires_grad` records nothing, and a backward closure is told which inputs need a
//! gradient and computes only those: a frozen prefix of a network runs no backward kernel.
mod ops;

pub use ops::*;

use crate::error::{shape_err, Error, Result};
use crate::tensor::Tensor;
use std::cell::Cell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Computes the gradients of an op's inputs from the gradient of its output. `needs[i]` says
/// whether input i wants one; the closure returns `None` where it does not.
pub type BackwardFn = Box<dyn Fn(&Tensor, &[bool]) -> Result<Vec<Option<Tensor>>> + Send + Sync>;

/// Where a leaf accumulates its gradient; shared with the parameter that owns it.
pub type GradSlot = Arc<Mutex<Option<Tensor>>>;

struct Op {
    name: &'static str,
    inputs: Vec<Var>,
    backward: BackwardFn,
}

struct Node {
    value: Tensor,
    requires_grad: bool,
    /// Leaves that require a gradient accumulate it here.
    grad: Option<GradSlot>,
    /// The op that made this value; taken (freeing what its backward saved) by `backward`.
    op: Mutex<Option<Op>>,
    /// The op's name, kept after the op itself is freed.
    op_name: Option<&'static str>,
}

/// A tensor in the autograd graph. Cheap to clone.
#[derive(Clone)]
pub struct Var(Arc<Node>);

thread_local! {
    static NO_GRAD: Cell<bool> = const { Cell::new(false) };
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
        Var(Arc::new(Node { value, requires_grad: false, grad: None, op: Mutex::new(None), op_name: None }))
    }

    /// A leaf that accumulates its gradient into a fresh slot.
    pub fn leaf(value: Tensor) -> Self {
        Self::leaf_with_slot(value, Arc::default())
    }

    /// A leaf that accumulates its gradient into `slot` (a parameter's gradient).
    pub fn leaf_with_slot(value: Tensor, slot: GradSlot) -> Self {
        Var(Arc::new(Node { value, requires_grad: true, grad: Some(slot), op: Mutex::new(None), op_name: None }))
    }

    /// The result of op `name` on `inputs`. Recorded only when gradients are enabled and some
    /// input requires one; otherwise `backward` is dropped at once with what it captured.
    pub fn from_op(name: &'static str, value: Tensor, inputs: &[&Var], backward: BackwardFn) -> Self {
        let requires_grad = grad_enabled() && inputs.iter().any(|v| v.requires_grad());
        let op = requires_grad.then(|| Op { name, inputs: inputs.iter().map(|v| (*v).clone()).collect(), backward });
        let op_name = op.as_ref().map(|op| op.name);
        Var(Arc::new(Node { value, requires_grad, grad: None, op: Mutex::new(op), op_name }))
    }

    pub fn value(&self) -> &Tensor {
        &self.0.value
    }

    pub fn shape(&self) -> &[usize] {
        self.0.value.shape()
    }

    pub fn requires_grad(&self) -> bool {
        self.0.requires_grad
    }

    /// The name of the op that produced this value, if it was recorded.
    pub fn op_name(&self) -> Option<&'static str> {
        self.0.op_name
    }

    /// The gradient accumulated in this leaf so far.
    pub fn grad(&self) -> Option<Tensor> {
        self.0.grad.as_ref().and_then(|slot| slot.lock().expect("grad slot poisoned").clone())
    }

    /// Back-propagates from this scalar, adding each leaf's gradient to what it holds.
    pub fn backward(&self) -> Result<()> {
        self.backward_with(&mut |_| {})
    }

    /// [`Var::backward`], calling `on_leaf` with a leaf's gradient slot as soon as that
    /// gradient is complete (every consumer done): data-parallel training starts reducing a
    /// bucket of gradients while the rest of the backward pass runs.
    pub fn backward_with(&self, on_leaf: &mut dyn FnMut(&GradSlot)) -> Result<()> {
        if self.0.value.numel() != 1 {
            return Err(shape_err("backward", format!("needs a scalar loss, got shape {:?}", self.shape())));
        }
        if !self.requires_grad() {
            return Ok(());
        }
        let seed = Tensor::from_vec(vec![1.0], self.shape(), self.0.value.device())?;
        let key = |v: &Var| Arc::as_ptr(&v.0) as usize;
        let mut grads: HashMap<usize, Tensor> = HashMap::from([(key(self), seed)]);
        // Consumed from the end: a node's inputs come earlier in the order, so they stay alive
        // (and their addresses unique) until their own turn.
        for var in self.topological_order().into_iter().rev() {
            let Some(grad) = grads.remove(&key(&var)) else { continue };
            let op = var.0.op.lock().expect("graph node poisoned").take();
            match op {
                Some(op) => {
                    let needs: Vec<bool> = op.inputs.iter().map(Var::requires_grad).collect();
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
                None if var.0.op_name.is_some() => {
                    return Err(Error::BackwardTwice { op: var.0.op_name.unwrap_or("?") });
                }
                None => {
                    if let Some(slot) = &var.0.grad {
                        let mut slot = slot.lock().expect("grad slot poisoned");
                        let total = match slot.take() {
                            Some(prev) => crate::ops::add(&prev, &grad)?,
                            None => grad,
                        };
                        *slot = Some(total);
                        drop(slot);
                        if let Some(slot) = &var.0.grad {
                            on_leaf(slot);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Nodes that require a gradient, each after all of its inputs.
    fn topological_order(&self) -> Vec<Var> {
        let mut order = Vec::new();
        let mut seen = std::collections::HashSet::new();
        // Iterative post-order DFS: deep networks would overflow a recursive one.
        let mut stack = vec![(self.clone(), false)];
        while let Some((var, expanded)) = stack.pop() {
            if expanded {
                order.push(var);
                continue;
            }
            if !var.requires_grad() || !seen.insert(Arc::as_ptr(&var.0) as usize) {
                continue;
            }
            stack.push((var.clone(), true));
            if let Some(op) = var.0.op.lock().expect("graph node poisoned").as_ref() {
                stack.extend(op.inputs.iter().map(|i| (i.clone(), false)));
            }
        }
        order
    }
}

impl std::fmt::Debug for Var {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Var({:?}, requires_grad={}, op={:?})", self.0.value, self.requires_grad(), self.op_name())
    }
}
