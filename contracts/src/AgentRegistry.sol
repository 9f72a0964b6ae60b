// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";

/// @title AgentRegistry: serving agents lock OPEN to be listed and to report usage, and are slashed for bad reports.
/// @notice A serving endpoint (a `payable serve` instance) registers under the address whose key signs its usage
/// events, locking at least `minimumStake`. The pipeline pays usage only from an agent that is staked here and not
/// slashed; it reads that from these events on the log (AgentRegistered, AgentUnstaked, AgentSlashed), never from
/// storage. Unstaking delists the agent at once but keeps its stake locked for `unstakeDelay`, so a validator who
/// finds a bad report has time to slash before the stake leaves. A slash takes `amount` to the treasury, delists the
/// agent for good (its address cannot register again) and names the evidence (a hash of the validator's findings)
/// in the event. Validators are accounts holding VALIDATOR_ROLE; the admin (the governance timelock in a
/// deployment) grants it and owns the minimum stake and the delay.
contract AgentRegistry is AccessControl {
    using SafeERC20 for IERC20;

    bytes32 public constant VALIDATOR_ROLE = keccak256("VALIDATOR_ROLE");

    enum Status {
        None,
        Staked,
        Unstaking,
        Slashed,
        Withdrawn
    }

    struct Agent {
        Status status;
        uint64 unlocksAt;
        uint128 stake;
    }

    IERC20 public immutable token;
    address public treasury;
    uint256 public minimumStake;
    uint256 public unstakeDelay;
    mapping(address => Agent) public agents;

    event AgentRegistered(address indexed agent, string endpoint, uint256 stake);
    event AgentUnstaked(address indexed agent, uint256 stake, uint256 unlocksAt);
    event AgentSlashed(
        address indexed agent, address indexed validator, uint256 amount, string reason, bytes32 evidenceHash
    );
    event AgentStakeWithdrawn(address indexed agent, uint256 amount);
    event AgentMinimumStakeChanged(uint256 previous, uint256 current);
    event AgentUnstakeDelayChanged(uint256 previous, uint256 current);

    error AlreadyRegistered(address agent);
    error StakeBelowMinimum(uint256 stake, uint256 minimum);
    error NotStaked(address agent);
    error NothingToWithdraw(address agent);
    error StakeLocked(address agent, uint256 unlocksAt);
    error SlashExceedsStake(uint256 amount, uint256 stake);

    constructor(
        IERC20 token_,
        address admin,
        address treasury_,
        uint256 minimumStake_,
        uint256 unstakeDelay_,
        address[] memory validators
    ) {
        token = token_;
        treasury = treasury_;
        minimumStake = minimumStake_;
        unstakeDelay = unstakeDelay_;
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        for (uint256 i = 0; i < validators.length; ++i) {
            _grantRole(VALIDATOR_ROLE, validators[i]);
        }
    }

    /// @notice Lists the caller as a serving agent at `endpoint`, locking `stake` OPEN (approved beforehand).
    function register(string calldata endpoint, uint256 stake) external {
        if (agents[msg.sender].status != Status.None) revert AlreadyRegistered(msg.sender);
        if (stake < minimumStake) revert StakeBelowMinimum(stake, minimumStake);
        agents[msg.sender] = Agent(Status.Staked, 0, uint128(stake));
        token.safeTransferFrom(msg.sender, address(this), stake);
        emit AgentRegistered(msg.sender, endpoint, stake);
    }

    /// @notice Delists the caller now; its stake stays slashable until `unstakeDelay` has passed.
    function unstake() external {
        Agent storage a = agents[msg.sender];
        if (a.status != Status.Staked) revert NotStaked(msg.sender);
        uint256 unlocksAt = block.timestamp + unstakeDelay;
        (a.status, a.unlocksAt) = (Status.Unstaking, uint64(unlocksAt));
        emit AgentUnstaked(msg.sender, a.stake, unlocksAt);
    }

    /// @notice Returns what is left of the caller's stake once its unstake (or slash) delay has passed.
    function withdraw() external {
        Agent storage a = agents[msg.sender];
        if (a.status != Status.Unstaking && a.status != Status.Slashed) revert NothingToWithdraw(msg.sender);
        if (block.timestamp < a.unlocksAt) revert StakeLocked(msg.sender, a.unlocksAt);
        uint256 amount = a.stake;
        (a.status, a.stake) = (Status.Withdrawn, 0);
        if (amount > 0) token.safeTransfer(msg.sender, amount);
        emit AgentStakeWithdrawn(msg.sender, amount);
    }

    /// @notice A validator takes `amount` of an agent's stake (listed or still unstaking) for reported usage that
    /// failed verification; `evidenceHash` commits to the findings. The agent is delisted for good.
    function slash(address agent, uint256 amount, string calldata reason, bytes32 evidenceHash)
        external
        onlyRole(VALIDATOR_ROLE)
    {
        Agent storage a = agents[agent];
        if (a.status != Status.Staked && a.status != Status.Unstaking) revert NotStaked(agent);
        if (amount > a.stake) revert SlashExceedsStake(amount, a.stake);
        a.stake -= uint128(amount);
        a.status = Status.Slashed;
        uint256 unlocksAt = block.timestamp + unstakeDelay;
        if (unlocksAt > a.unlocksAt) a.unlocksAt = uint64(unlocksAt);
        if (amount > 0) token.safeTransfer(treasury, amount);
        emit AgentSlashed(agent, msg.sender, amount, reason, evidenceHash);
    }

    /// @notice Whether `agent` is listed now: registered, not unstaking, not slashed.
    function isStaked(address agent) external view returns (bool) {
        return agents[agent].status == Status.Staked;
    }

    function setMinimumStake(uint256 newMinimumStake) external onlyRole(DEFAULT_ADMIN_ROLE) {
        emit AgentMinimumStakeChanged(minimumStake, newMinimumStake);
        minimumStake = newMinimumStake;
    }

    function setUnstakeDelay(uint256 newDelay) external onlyRole(DEFAULT_ADMIN_ROLE) {
        emit AgentUnstakeDelayChanged(unstakeDelay, newDelay);
        unstakeDelay = newDelay;
    }
}
