// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";

/// @title ProtocolParameters: the payout parameters the pipeline reads from chain when it closes an epoch.
/// @notice Owned by the governance timelock, so each value changes only through a Governor proposal that
/// passed its vote and waited out the timelock delay. The pipeline reads every value at the block an epoch
/// closes and records them (and the block) with the epoch; a setter emits an event, so the history of each
/// parameter is on-chain. Bounds are checked here, not in the pipeline: a proposal with a bad value reverts
/// when executed and changes nothing.
contract ProtocolParameters is Ownable {
    /// @dev Basis points: 10,000 is the whole.
    uint256 public constant BPS = 10_000;
    /// @dev The harm threshold is at most 100 seed-to-seed spreads: beyond that no refit could ever confirm harm.
    uint256 public constant MAX_REFIT_MARGIN_BPS = 100 * BPS;

    /// @notice OPEN wei newly allotted to each reward epoch.
    uint256 public epochPool;
    /// @notice OPEN wei a served request pays per prompt or completion token.
    uint256 public usagePricePerToken;
    /// @notice How a usage payment is split (basis points, summing to 10,000): the cited sources, the data
    /// that trained the adapter, and the adapter's trainer.
    uint16 public usageSourcesBps;
    uint16 public usageTrainingBps;
    uint16 public usageTrainerBps;
    /// @notice Harm threshold of a slash: the counterfactual refit must improve the eval loss by more than this
    /// many seed-to-seed spreads, in basis points of one spread (10,000 = one spread).
    uint32 public refitMarginBps;
    /// @notice Whether a harm slash needs a counterfactual refit at all (else the score interval below zero suffices).
    bool public requireRefit;
    /// @notice Beta(alpha, beta) prior of contributor reputation: alpha accepted, beta rejected pseudo-counts.
    uint32 public priorAccepted;
    uint32 public priorRejected;

    event EpochPoolSet(uint256 pool);
    event UsageTermsSet(uint256 pricePerToken, uint16 sourcesBps, uint16 trainingBps, uint16 trainerBps);
    event HarmRuleSet(uint32 refitMarginBps, bool requireRefit);
    event ReputationPriorSet(uint32 priorAccepted, uint32 priorRejected);

    error BpsOutOfRange(uint256 bps);
    error SplitNotWhole(uint256 sumBps);
    error RefitMarginOutOfRange(uint256 refitMarginBps);
    error EmptyPrior();

    struct Values {
        uint256 epochPool;
        uint256 usagePricePerToken;
        uint16 usageSourcesBps;
        uint16 usageTrainingBps;
        uint16 usageTrainerBps;
        uint32 refitMarginBps;
        bool requireRefit;
        uint32 priorAccepted;
        uint32 priorRejected;
    }

    constructor(address timelock, Values memory values) Ownable(timelock) {
        _setEpochPool(values.epochPool);
        _setUsageTerms(values.usagePricePerToken, values.usageSourcesBps, values.usageTrainingBps,
            values.usageTrainerBps);
        _setHarmRule(values.refitMarginBps, values.requireRefit);
        _setReputationPrior(values.priorAccepted, values.priorRejected);
    }

    function setEpochPool(uint256 pool) external onlyOwner {
        _setEpochPool(pool);
    }

    function setUsageTerms(uint256 pricePerToken, uint16 sourcesBps, uint16 trainingBps, uint16 trainerBps)
        external
        onlyOwner
    {
        _setUsageTerms(pricePerToken, sourcesBps, trainingBps, trainerBps);
    }

    function setHarmRule(uint32 marginBps, bool refitRequired) external onlyOwner {
        _setHarmRule(marginBps, refitRequired);
    }

    function setReputationPrior(uint32 accepted, uint32 rejected) external onlyOwner {
        _setReputationPrior(accepted, rejected);
    }

    function _setEpochPool(uint256 pool) private {
        epochPool = pool;
        emit EpochPoolSet(pool);
    }

    function _setUsageTerms(uint256 pricePerToken, uint16 sourcesBps, uint16 trainingBps, uint16 trainerBps) private {
        if (sourcesBps > BPS) revert BpsOutOfRange(sourcesBps);
        if (trainingBps > BPS) revert BpsOutOfRange(trainingBps);
        if (trainerBps > BPS) revert BpsOutOfRange(trainerBps);
        uint256 sum = uint256(sourcesBps) + trainingBps + trainerBps;
        if (sum != BPS) revert SplitNotWhole(sum);
        usagePricePerToken = pricePerToken;
        (usageSourcesBps, usageTrainingBps, usageTrainerBps) = (sourcesBps, trainingBps, trainerBps);
        emit UsageTermsSet(pricePerToken, sourcesBps, trainingBps, trainerBps);
    }

    function _setHarmRule(uint32 marginBps, bool refitRequired) private {
        if (marginBps > MAX_REFIT_MARGIN_BPS) revert RefitMarginOutOfRange(marginBps);
        (refitMarginBps, requireRefit) = (marginBps, refitRequired);
        emit HarmRuleSet(marginBps, refitRequired);
    }

    function _setReputationPrior(uint32 accepted, uint32 rejected) private {
        if (uint256(accepted) + rejected == 0) revert EmptyPrior();
        (priorAccepted, priorRejected) = (accepted, rejected);
        emit ReputationPriorSet(accepted, rejected);
    }

    /// @notice Every parameter in one call, so the pipeline reads a consistent set at one block.
    function all() external view returns (Values memory) {
        return Values(epochPool, usagePricePerToken, usageSourcesBps, usageTrainingBps, usageTrainerBps,
            refitMarginBps, requireRefit, priorAccepted, priorRejected);
    }
}
